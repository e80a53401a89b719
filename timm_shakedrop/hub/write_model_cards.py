"""Regenerate the family model cards in model_cards/: `python -m timm_shakedrop.hub.write_model_cards [--check]`."""
import sys

from .model_cards import main

if __name__ == '__main__':
    sys.exit(main())
