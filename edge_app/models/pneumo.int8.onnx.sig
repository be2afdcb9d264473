{
 "algorithm": "ed25519",
 "file": "pneumo.int8.onnx",
 "sha256": "8a7e371d71577d977ab6d28ba45a278930f85cbfea40803f2d90efe86f897e1d",
 "key_id": "12b1191efde1810f",
 "signature": "dP0IZkLfPG+Wf6yhYwuBpsqyVaU9PuVxaGULdb3jL1jme2Jbf5UxI5MOHBkBsbqmzXRRYE66xdaNKOqeagbKCg=="
}
