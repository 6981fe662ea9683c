"""The node agent (a DaemonSet): reads the TPM (tpm2-pytss) and the kernel's IMA log and serves
fresh evidence over HTTPS; pushes "the log grew" to the verifier."""
