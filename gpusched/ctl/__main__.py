import sys

from gpusched.ctl.main import main

sys.exit(main())
