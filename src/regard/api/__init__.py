"""The HTTP API: Amazon Rekognition's wire protocol (AWS JSON 1.1 + SigV4) over Starlette."""
