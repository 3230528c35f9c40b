"""``python -m agents.report OUT`` — rebuild a batch output folder's results browser (agents.browser.report)."""
import sys

from agents.browser.report import main

if __name__ == "__main__":
    sys.exit(main())
