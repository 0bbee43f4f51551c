"""What every torchrun rank runs besides LLaMA-Factory's training: the callbacks `arpo_train_sft.entry` attaches.

One resume for the job (`agree`), a checkpoint on SIGTERM (`preempt`), a stop at the first non-finite step
(`health`), throughput/MFU/memory per logged step (`metrics`), and a CUDA out-of-memory error told as one
line (`oom`). Nothing here imports LLaMA-Factory: `lf/` does, and the entry imports `lf/` first.
"""
