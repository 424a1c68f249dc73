"""Test support shipped with the package: llama.cpp's reference codecs through ctypes, and the
input families every codec is checked on."""
