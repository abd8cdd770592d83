"""Export file writers: formats and CSV styles (`formats`), XLSX (`xlsx`) and the output of
one variant -- batches to finished, possibly split files (`output`)."""

from exporter_api.runs.writers.formats import (
    FILE_FORMATS,
    MEDIA_TYPES,
    CsvStyle,
    FileFormat,
    TooWideForXlsx,
    format_of,
    part_name,
    with_format,
)
from exporter_api.runs.writers.output import OutputSpec, VariantOutput

__all__ = [
    "FILE_FORMATS",
    "MEDIA_TYPES",
    "CsvStyle",
    "FileFormat",
    "OutputSpec",
    "TooWideForXlsx",
    "VariantOutput",
    "format_of",
    "part_name",
    "with_format",
]
