"""Training-record builders: every dataset becomes TRL conversational VLM records (JSONL)."""
