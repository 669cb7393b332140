"""Model backbones: the tiny offline Gemma3, loading of real VLMs, and freezing by part."""
