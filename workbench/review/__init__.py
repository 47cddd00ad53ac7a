"""`wb review`: a local web app to read, filter and judge a run's answers, blind, with the verdicts in the run.

`items` loads what is shown (the run's scores.jsonl through the report's reader, a third column from another run or a
predictions file); `queries` filters, sorts, pages and queues them; `pages` renders the HTML (the report's escaping
and word diff); `app` is the Starlette app (session token, verdicts through `evaluate.verdicts.VerdictStore`);
`serve` binds the address and runs uvicorn quietly. Reads files only: no model code, no deep-learning stack.
"""
