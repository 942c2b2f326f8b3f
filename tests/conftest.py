import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/helpers

import coic_basicsr  # noqa: E402,F401  (shim + registration for every test)
