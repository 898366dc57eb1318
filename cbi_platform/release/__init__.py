"""Model release: the champion/challenger lifecycle (register, gates, promote, roll back,
audit) and the hand-off of the champion to serving and deployment."""
