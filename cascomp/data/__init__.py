"""Datasets for compression runs: a spec string ("SCHEME:ARG", see SPEC_HELP) in, a DataBundle out.

Depends on nothing else in cascomp but its errors, so the search and the CLI can use it freely.
"""

from cascomp.data.bundle import DataBundle
from cascomp.data.load import SPEC_HELP, absolute_spec, load_data, spec_path

__all__ = ["SPEC_HELP", "DataBundle", "absolute_spec", "load_data", "spec_path"]
