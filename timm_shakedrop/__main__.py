import sys

from timm_shakedrop.cli import main

sys.exit(main())
