"""The named stages of one training run, in the order `trainer.train.train` runs them:

1. `load_data`  — validated examples → tokenized rows cut to `max_seq_length`; the validation
                   split is held out here.
2. `plan`       — hyperparameters, tuning decision, device and the resolved training controls
                   (`trainer.planning`), reported as events.
3. `build`      — the model through `trainer.tuning.prepare_model`, the method's TRL trainer
                   (`trainer.builders`), the progress bridge, evaluator and early stopping.
4. `execute`    — `trainer.train()` with out-of-memory errors made clear.
5. `finish`     — paused/cancelled, or: best weights restored, last evaluation on the whole
                   validation set, artifacts saved through `trainer.tuning.save_model`.
"""
