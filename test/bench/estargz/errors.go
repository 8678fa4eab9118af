package main

import "errors"

// Sentinel errors; callers (and tests) tell failures apart with errors.Is.
var (
	// errUsage: the command line is malformed (unknown command, missing or bad flag).
	errUsage = errors.New("usage")
	// errBadRef: an image reference is not HOST[:PORT]/NAME:TAG.
	errBadRef = errors.New("bad image reference")
	// errNotEStargz: the image's layer carries no eStargz TOC digest annotation.
	errNotEStargz = errors.New("layer is not eStargz")
	// errLayerCount: the image does not have exactly one layer.
	errLayerCount = errors.New("image must have exactly one layer")
	// errUnsupportedManifest: the manifest is not a single OCI or Docker v2 image manifest.
	errUnsupportedManifest = errors.New("unsupported manifest")
	// errRegistry: the registry answered with an unexpected status.
	errRegistry = errors.New("registry error")
	// errTooLarge: a registry document exceeds the size this tool reads.
	errTooLarge = errors.New("document too large")
)
