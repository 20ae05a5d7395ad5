"""Paygate gateway: the signed edge. Verifies calls and forwards their raw bytes to healthy workers."""
