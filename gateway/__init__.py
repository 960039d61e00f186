"""OpenAI-compatible gateway that routes each request to the best engine pod."""
