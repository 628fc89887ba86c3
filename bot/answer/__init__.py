"""The answer core: condense -> retrieve -> assess -> compose -> verify, plus safety, prompts and the service."""
