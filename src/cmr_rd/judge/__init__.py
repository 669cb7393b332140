"""Reasoning quality (the paper's Fig. 3): blinded ratings of the models' diagnostic chains by a
deterministic rubric (offline), an LLM judge (GPT-4o through the client layer) and clinicians
(a sheet filled and fed back)."""
