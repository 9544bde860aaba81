"""The bundle contract: what a bundle is (docs/bundle.md) and how one is stored and served.

`manifest` is the one reader of manifest.json, `http` the file responses and listening
socket both servers share, `atomic_dir` the one-step replacement of a folder, `errors`
the user-error base class every command prints as one line. This package imports no
other package of llmpack: packager and model_registry build on it.
"""
