"""Deployment of served versions outside the platform (Vertex AI endpoints)."""
