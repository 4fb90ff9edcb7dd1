import sys

from launch.netns.cli import main

sys.exit(main())
