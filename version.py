"""botstate's version, kept here alone: `botstate --version`, /healthz and the package read it."""

VERSION = "0.15.0"
