"""Ingestion: loaders, chunking, embeddings, index writing and KB lint."""
