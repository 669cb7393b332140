"""Report rewriting: PHI gate, LLM client (OpenAI or offline), reasoning templates and QC."""
