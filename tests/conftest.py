import os
import sys
from pathlib import Path

# helpers.py is shared by the test modules; the reference libraries must never reach the network.
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
