"""The store: conversations, answers, feedback, handoffs, audit log and analytics."""
