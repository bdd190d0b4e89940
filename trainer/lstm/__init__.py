"""The hydrology LSTM, trained under torch elastic: the deep stage.

- `model`: the network (input linear layer → nn.LSTM, cuDNN on CUDA by itself → dropout → linear head) and its
  artifact contract `models/lstm/{model.pt, model.json}` that the TorchServe handler reads.
- `data`: the series prepared once per run (`prepared/lstm.npz`); `train`: the training loop (DDP, checkpoints,
  early stopping, per-step hooks); `checkpoint`: checksummed checkpoint files; `elastic`: the torchrun entry point;
  `launch`: torchrun on this machine.
- `evaluate`, `metrics`, `baselines`: scores per site (NSE, KGE, RMSE, bias) of the LSTM and of the baselines
  (climatology, zoo regressors on lagged forcings); `figures`; `stage`: the deep stage (`stages/deep.json`).
"""
