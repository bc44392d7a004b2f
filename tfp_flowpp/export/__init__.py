"""Export for serving: versioned SavedModels for TF Serving (see docs/serving.md)."""

from tfp_flowpp.export.saved_model import FORMAT
from tfp_flowpp.export.saved_model import FUNCTION_NAMES
from tfp_flowpp.export.saved_model import METADATA_PATH
from tfp_flowpp.export.saved_model import SIGNATURE_NAMES
from tfp_flowpp.export.saved_model import export_saved_model
from tfp_flowpp.export.saved_model import make_serving_module
from tfp_flowpp.export.saved_model import read_metadata
from tfp_flowpp.export.versions import ExportError
from tfp_flowpp.export.versions import existing_versions
from tfp_flowpp.export.versions import next_version
from tfp_flowpp.export.versions import resolve_version

__all__ = ['ExportError', 'FORMAT', 'FUNCTION_NAMES', 'METADATA_PATH',
           'SIGNATURE_NAMES', 'existing_versions', 'export_saved_model',
           'make_serving_module', 'next_version', 'read_metadata',
           'resolve_version']
