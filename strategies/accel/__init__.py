"""Accelerated implementations of the reference strategies: the same rules compiled (mypyc
per event, numba per batch), used by the plain definitions beside this folder and agreeing
with them bit for bit. Installed as ``qsframework.strategies.accel``."""
