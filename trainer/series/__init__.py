"""Multi-site daily time series for the LSTM: a small zoo of sources behind one loader.

`load_timeseries` opens the source the spec's `lstm.data` names, checks the spec against it and returns
`TimeSeriesData` (`contract`): contiguous float32 arrays in the variables' own units, NaN where missing.

Sources (`lstm.data`), one module each:
- `name: camels_us_sample` (the default): 4 real CAMELS-US basins shipped in `trainer/datasets/` (`camels`).
- `path`: a CAMELS-US folder (`camels`: recognised by its `*_lump_cida_forcing_leap.txt` files at any depth;
  its text files parsed by `text`, Numba, a thread per core), a folder of one CSV/Parquet file per site, one
  long CSV/Parquet table with `site` and `date` columns, or a NetCDF file with `site` and `date` dimensions
  (`tables`).
- `name: synthetic`: a weather generator driving a conceptual bucket model (snow, soil), seeded, any size
  (`synthetic`; `write_camels_us` writes it in the CAMELS-US text layout, for benchmarks at scale).

Adding a built-in is a line in `load.BUILTIN_SOURCES`; `checks` holds the checks every source goes through.
Gap filling is preprocessing (`mlkube.trainer.preprocess`), composed with loading by the LSTM's prepare step.
"""

from mlkube.trainer.series.contract import PERIODS, Source, TimeSeriesData

_LOAD = ("BUILTIN_SOURCES", "DATASETS", "load_timeseries", "open_source")


def __getattr__(name: str):
    """The loader's names, imported on first use: a training worker reads prepared arrays and needs neither
    the loaders nor pandas (0.2 s of its start-up)."""
    if name in _LOAD:
        from mlkube.trainer.series import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILTIN_SOURCES",
    "DATASETS",
    "PERIODS",
    "Source",
    "TimeSeriesData",
    "load_timeseries",
    "open_source",
]
