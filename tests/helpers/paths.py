"""The repository's root, for tests that run its commands or read its files."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
