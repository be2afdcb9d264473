{
 "algorithm": "ed25519",
 "file": "pneumo.int8.onnx",
 "sha256": "858068c1e95cfed06ec5c864d8fe6b9b719ee2114e80cedf7cc798ee8df8004d",
 "key_id": "12b1191efde1810f",
 "signature": "+YuMqa961b1hMB7EJGOrx174P/jlOHe6eEIod311b75zdz1DOyd7DxOfK8dELdw/FvEZIzUo1iz+jeFRwTjxBQ=="
}
