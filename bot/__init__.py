"""PolicyDesk: support-policy copilot."""
