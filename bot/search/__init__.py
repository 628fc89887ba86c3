"""Search: hybrid retrieval (dense + BM25, fusion) under the requester's filters."""
