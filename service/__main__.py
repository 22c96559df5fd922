from service.commands import app

app(prog_name="python -m service")
