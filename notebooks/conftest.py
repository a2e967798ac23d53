"""pytest --nbval-lax over the notebooks runs them at their small (CI) size.

``uslkit.notebook.start`` reads ``USLKIT_NB_SIZE`` when a notebook starts; the kernels nbval launches inherit
this process' environment. Set ``USLKIT_NB_SIZE=full`` to validate at full size instead.
"""

import os

os.environ.setdefault("USLKIT_NB_SIZE", "small")
