"""`WB_NO_SKIPS=1`, which `make test` sets: a skip anywhere (in a test, at collection) fails the run and says why."""

from __future__ import annotations

import pytest
from conftest import REPO

SKIPPING = {
    "test_inside": "import pytest\n\n\ndef test_needs_x():\n    pytest.skip('no x here')\n\n\ndef test_ok():\n    pass\n",
    "test_module": "import pytest\n\npytest.importorskip('no_such_package_wb')\n\n\ndef test_never():\n    pass\n",
    "test_marked": "import pytest\n\n\n@pytest.mark.xfail(reason='known')\ndef test_known():\n    raise ValueError\n",
}


def _run(pytester: pytest.Pytester) -> pytest.RunResult:
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(**SKIPPING)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider")


def test_under_wb_no_skips_every_skip_fails_the_run_with_its_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WB_NO_SKIPS", "1")
    result = _run(pytester)
    # The skipped test fails; the skipped module is listed and fails the run; an expected failure is no skip.
    result.assert_outcomes(passed=1, failed=1, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skipped under WB_NO_SKIPS=1*: no x here*"])
    result.stdout.fnmatch_lines(["*modules skipped under WB_NO_SKIPS=1*", "test_module.py:*no_such_package_wb*"])


def test_under_wb_no_skips_a_skipped_module_alone_fails_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WB_NO_SKIPS", "1")
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_module=SKIPPING["test_module"], test_fine="def test_fine():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_without_the_switch_skips_stay_skips(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WB_NO_SKIPS", raising=False)
    result = _run(pytester)
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
