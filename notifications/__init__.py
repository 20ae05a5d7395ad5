"""The HTTP edge for provider callbacks: stores each one as received and hands it to a worker."""
