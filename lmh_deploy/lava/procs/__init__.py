"""Lava Processes with their ProcessModels and nothing else: when compiling, Lava imports every
module beside a Process to search for models, so this package holds no other code."""
