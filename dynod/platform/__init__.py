"""The platform behind `dynod serve`: the composition root, its services, dynos made
from slugs, and the router's view of them."""
