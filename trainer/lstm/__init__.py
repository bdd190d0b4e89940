"""The hydrology LSTM, trained under torch elastic: the deep stage.

- `model`: the network (input linear layer → nn.LSTM, cuDNN on CUDA by itself → dropout → linear head) and its
  artifact contract `models/lstm/{model.pt, model.json}` that the TorchServe handler reads.
- `prepared`: the series loaded, gap-filled and checked once per run (`Run.prepared_lstm`); `train`: the
  training loop (DDP, checkpoints, early stopping, per-step hooks); `checkpoint`: checksummed checkpoint
  files; `elastic`: the torchrun entry point; `exporter`: the workers' Prometheus exporter.
- `evaluate`, `scores`, `baselines`: scores per site (NSE, KGE, RMSE, bias) of the LSTM and of the baselines
  (climatology, zoo regressors on lagged forcings); `figures`; `stage`: the deep stage (`stages/deep.json`).
"""
