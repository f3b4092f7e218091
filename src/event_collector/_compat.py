"""Names that moved into the standard library after Python 3.11."""

import sys

if sys.version_info >= (3, 12):
    from typing import TypeAliasType
else:
    from typing_extensions import TypeAliasType

__all__ = ["TypeAliasType"]
