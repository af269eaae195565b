"""Ray must stay on loopback here: it reads this once, at its first import, in every process."""
import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
