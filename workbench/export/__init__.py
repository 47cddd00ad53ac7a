"""`wb export`: from a run folder to what serves it: merged or adapter-only safetensors folders (`pipeline`), GGUF with
an Ollama Modelfile (`gguf`, `modelfile`)."""
