"""A plugin whose import fails, as a half-installed dependency would."""

import stepkit_missing_dependency  # noqa: F401
