"""`python -m flyte_connector build ...`: see `flyte_connector.build`."""

import sys

from flyte_connector.build import main

sys.exit(main())
