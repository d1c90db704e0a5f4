"""Tools for the people who run agents: host wiring (install, doctor), hooks that wake agents, and
readers of the shared store that act as no session (they peek, never lease)."""
