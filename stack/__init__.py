"""The top floor: the server-side CLI commands (`tuneforge server|keys|worker|up|demo`), the
embedded stack that runs every part on one machine, and the demo (the README's main job). It
may import every other package; nothing imports it."""
