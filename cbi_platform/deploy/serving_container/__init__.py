"""The Vertex AI custom serving container: an HTTP app over `ServedModel.predict`."""
