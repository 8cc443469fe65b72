"""Frames and images: decode, display pipeline, encode, render, volumes (pure: no I/O)."""

from .codecs import serialise_openjpeg

serialise_openjpeg()
