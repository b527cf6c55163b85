"""The pure core: what to ask Gemini for each vision task and how to read its answer.

No I/O and no SDKs here (no worker, Celery, boto3, redis or google-genai imports).
"""
