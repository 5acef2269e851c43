"""Running models on molecules: the one engine, the device picker, predictions of a model folder, and chunked, resumable screening of large files."""
