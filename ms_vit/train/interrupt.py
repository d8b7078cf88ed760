"""Ctrl-C and SIGTERM during training, in one place: the first asks the run to stop after the current optimizer
step and save (``checkpoint.resume.save_interrupted``); a second stops at once."""

from __future__ import annotations

import signal
import threading

from mindspore.train import Callback

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interruptible:
    """Context manager around the training loop: installs the handler, restores the previous ones on exit.

    ``state`` is the run's ``RunState``; its ``interrupted`` flag is what the handler sets.
    """

    def __init__(self, state):
        self.state = state
        self.previous = {}

    def handle(self, signum, frame):
        self.state.interrupted = True
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to stop at once)", flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
            for sig in SIGNALS:
                signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
        return False

    def callback(self) -> "StopOnInterrupt":
        """The callback that keeps the handler installed and stops the step loop between optimizer steps."""
        return StopOnInterrupt(self)


class StopOnInterrupt(Callback):
    """Goes after ``Progress`` in the callback list (which counts the step's micro-batch first)."""

    def __init__(self, guard: Interruptible):
        super().__init__()
        self.guard, self.state = guard, guard.state

    def on_train_step_begin(self, run_context):
        # MindSpore's runtime installs its own SIGINT handler (which ends the process with SIGTERM) once training
        # starts: take both signals back before every step, until the first one arrives.
        if self.guard.previous and not self.state.interrupted:
            for sig in SIGNALS:
                signal.signal(sig, self.guard.handle)

    def on_train_step_end(self, run_context):
        s = self.state
        # Only between optimizer steps (never with half-accumulated gradients), and not on the epoch's last step:
        # that epoch ends normally and saves its own checkpoint.
        if s.interrupted and s.between_steps and s.step_in_epoch < s.steps_per_epoch:
            run_context.request_stop()
