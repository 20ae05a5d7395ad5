"""Deployment files checked by the real tools that read them (deploy/README.md, "What the tests check")."""
